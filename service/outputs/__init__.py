"""Writers that turn reconstructed magnitude images into files and messages."""
