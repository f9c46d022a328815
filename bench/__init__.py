"""neurosel's benchmark suite (``python -m bench.run``, ``make bench``): each measurement is a
ratio against a reference timed in the same run on the same machine; results go to
``bench/RESULTS.md``. Not part of the test suite's pass/fail."""
