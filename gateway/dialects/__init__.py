"""Client-facing formats: one module per dialect, each parsing its requests into the
gateway's `ProxyRequest` and rendering answers, streams and errors back in its format."""
