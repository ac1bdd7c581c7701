"""Spine phantoms: synthetic lateral radiographs with exact labels (``tfmssass synth``)."""

#: How lateral films are drawn: ``radiograph`` (projected 3-D anatomy through a physical image chain
#: and a vendor's processing; the shipped demo is trained on these) or ``geometric`` (flat shapes: clean
#: films for tests that need every corner plain to see). Kept here, free of imports, for the CLI's help.
STYLES = ("radiograph", "geometric")
DEFAULT_STYLE = "radiograph"
