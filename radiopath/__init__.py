"""radiopath: kidney-cancer prognosis from CT and whole-slide images.

The package follows the pipeline, one sub-package per stage; stages talk to each
other only through files (see the README's architecture section):

data -> preprocess -> encoders -> graphs -> models -> training -> survival -> report
"""

__version__ = "0.1.0"
