# Quick start: `make run` (set up, build the index if needed, start the chat app) and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8501

.PHONY: setup run index test

setup:
	@bash scripts/setup.sh

index: setup
	@$(BIN)/rag index

run: index
	$(BIN)/streamlit run app.py --server.port $(PORT) --server.headless true

test: setup
	$(BIN)/python -m pytest
