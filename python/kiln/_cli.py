"""The `kiln` command of the wheel: runs the kiln binary bundled in the package (kiln/bin/kiln,
which finds libkiln.so and the bundled libraries through its RUNPATH), with the same arguments."""
import os
import sys

BINARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin", "kiln")


def main():
    if not os.path.exists(BINARY):
        sys.exit("kiln: the kiln binary is not in this installation (%s); reinstall the wheel" % BINARY)
    argv = ["kiln"] + sys.argv[1:]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(BINARY, argv)   # replaces this process: exit status and signals are the binary's own


if __name__ == "__main__":
    main()
