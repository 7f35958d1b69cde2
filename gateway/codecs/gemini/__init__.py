"""The Gemini generateContent wire format's codecs."""
