# neurosel: `make test` installs what is missing and runs the whole test suite.
.PHONY: setup test test-fast bench clean-venv

# Set-up is idempotent and quick when nothing is missing.
setup:
	utils/setup_env.sh --with-slurm

# pytest exits 5 when it collected no test; that must fail, as any other non-zero code does.
# The Slurm tests start a local cluster when none answers and stop it when they end
# (tests/slurm_fixture.py); set-up's full output is in build/setup_env.log.
test: setup
	.venv/bin/python -m pytest tests -ra --durations=30; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

# Everything but the slow end-to-end and cluster tests.
test-fast: setup
	.venv/bin/python -m pytest tests -m "not slow" -ra

# Benchmarks (not part of the tests): bench/RESULTS.md from a finished run (default egs/synth), e.g.
# make bench BENCH_ARGS="--only decode,prune --quick"; see the README, "Benchmarks".
bench: setup
	.venv/bin/python -m bench.run $(BENCH_ARGS)

clean-venv:
	rm -rf .venv
