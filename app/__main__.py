import gc

from app.cli import main

try:
    main()
finally:
    # The process ends here: spare it the interpreter's last full garbage collection, which
    # walked every object still alive (0.3 to 0.5 s of a 3 s `draft`; issue 13). atexit
    # handlers still run; the OS takes back the memory.
    gc.freeze()
