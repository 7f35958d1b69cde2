"""Unit tests of the request, reply and stream codecs (gateway/codecs)."""
