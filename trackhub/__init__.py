"""Track hub files (hub.txt, genomes.txt, trackDb.txt, .2bit) and IGV sessions from a precompute manifest."""
