"""What stages keep on disk: content keys, atomic publishing, image files, seeds."""
