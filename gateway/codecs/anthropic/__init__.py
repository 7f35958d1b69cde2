"""The Anthropic Messages wire format's codecs."""
