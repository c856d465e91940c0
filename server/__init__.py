"""The Flask track server: hub and BigWig files with byte ranges, prediction API and the web page."""
