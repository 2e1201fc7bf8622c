"""The web app behind `newsletter serve`."""
