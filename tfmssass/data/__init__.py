"""tf.data input pipelines for the two stages."""
