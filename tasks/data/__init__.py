"""Dataset readers: real files from local paths, never downloaded at run time."""
