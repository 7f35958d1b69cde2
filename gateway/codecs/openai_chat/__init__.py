"""The OpenAI chat completions wire format's codecs."""
