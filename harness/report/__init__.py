"""Views of the results store: tables, their renderers (Markdown, HTML, CSV, JSON), figures, the writer."""
