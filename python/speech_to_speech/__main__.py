"""`python -m speech_to_speech` runs the command line."""

import sys

from speech_to_speech.cli import main

sys.exit(main())
