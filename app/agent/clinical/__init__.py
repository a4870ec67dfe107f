"""Clinical NLP for the offline backend: the shared medspaCy pipeline (``pipeline``), the irAE
screen (``irae``), and the summary and question logic (``summary``, ``question``)."""
