"""The gateway's one internal language: typed requests, replies and stream events, and one
codec per wire format that decodes its bodies into them and encodes them back."""
