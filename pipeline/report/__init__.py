"""The build report: facts gathered from a build's folders, and the HTML page."""
