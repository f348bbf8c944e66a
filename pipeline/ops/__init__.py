"""Running builds: progress on a terminal or under luigid, and a luigid on this host."""
