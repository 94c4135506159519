"""The chat page served at ``/``: one static HTML file, no build step, nothing fetched from elsewhere."""
