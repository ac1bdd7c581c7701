"""tfmssass: automated mSASSS scoring of ankylosing spondylitis spine radiographs."""

__version__ = "0.1.0"
