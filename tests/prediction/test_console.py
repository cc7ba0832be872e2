"""The console: in a terminal predict.py shows a progress bar and a summary, not the
original's seven lines per window (its logs hold them, unchanged); --verbose, or a console
that is not a terminal, gets the original's lines."""

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

from conftest import SRC, quick_model
from evaluation.log_format import parse_log
from utils.synthetic import make_recording


def console_of(argv, terminal: bool) -> str:
    """What ``predict.py argv`` prints on its standard error (a pseudo-terminal where asked)."""
    if not terminal:
        return subprocess.run([sys.executable, os.path.join(SRC, "predict.py")] + argv, capture_output=True,
                              text=True, timeout=300).stderr
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))     # a terminal 100 columns wide
    process = subprocess.Popen([sys.executable, os.path.join(SRC, "predict.py")] + argv, stdout=subprocess.DEVNULL,
                               stderr=child, stdin=subprocess.DEVNULL)
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:                        # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert process.wait(timeout=300) == 0
    os.close(main)
    return b"".join(chunks).decode("utf-8", "replace")


def test_a_terminal_gets_a_progress_bar_and_a_summary_and_the_logs_stay_whole(tmp_path, capfd):
    model = quick_model(tmp_path / "m.pk")
    make_recording(str(tmp_path / "rec.wav"), 3.0, 16000, [("upsweep", 1.0)], seed=1)
    argv = ["--model_path", model, "--input_file", str(tmp_path / "rec.wav"), "--sequence_len", "0.2", "--hop", "0.1",
            "--num_workers", "0", "--memory_format", "contiguous", "--threshold", "0.36"]
    quiet = console_of(argv + ["--output_dir", str(tmp_path / "a")], terminal=True)
    windows = len(parse_log(str(tmp_path / "a" / "rec_predict_output.log")).windows)
    assert windows == 29                                                 # the log: every window, as before
    assert "|I|time=" not in quiet and "BasicBlock" not in quiet            # no per-window lines, no module tree
    assert "Summary: 1 recording(s), 0.00 h of audio; events:" in quiet and "h audio" in quiet   # and a bar
    verbose = console_of(argv + ["--output_dir", str(tmp_path / "b"), "--verbose"], terminal=True)
    assert verbose.count("|I|time=") == windows
    import predict

    capfd.readouterr()
    assert predict.main(argv + ["--output_dir", str(tmp_path / "c"), "--no_progress"]) == 0   # not a terminal
    assert capfd.readouterr().err.count("|I|time=") == windows             # scripts reading the console: as before
