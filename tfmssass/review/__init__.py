"""The reader workstation: ``tfmssass review`` serves a page to label, review and correct points and
grades; every change goes to ``SOURCE/review.sqlite``; ``review export`` writes a label file."""
