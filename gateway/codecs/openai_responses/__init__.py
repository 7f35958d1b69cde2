"""The OpenAI Responses wire format's codecs."""
