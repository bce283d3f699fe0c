"""What the test switches set: one provider process, one mode for every token it issues until set again."""

mode = "normal"
