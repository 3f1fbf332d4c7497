.PHONY: install run cluster test lint bench
install:
	python3 -m pip install -r requirements-dev.txt
	npm ci --prefix tests/a11y --no-audit --no-fund
run:
	python3 server.py
cluster:
	python3 scripts/cluster.py
test:
	python3 -m pytest -q -n 2
lint:
	ruff check . && ruff format --check . && mypy
bench:
	python3 bench/run.py
