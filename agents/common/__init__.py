"""The bottom layer every package may import: user-facing errors and durable file writes."""
