import sys

from confidential_pods.cli import main

sys.exit(main())
