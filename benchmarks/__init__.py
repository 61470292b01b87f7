"""Speed and scale harnesses for rag, kept out of the library package (``src/rag``).

- :mod:`benchmarks.bench`: ``rag bench``, speed and memory of every stage on the default corpus:
  the query encoder, warm search and ask, the stock LangChain baseline, fresh ``rag ask`` and
  ``rag index`` processes, and ``streamlit run app.py`` driven in Debian's chromium (the repository's
  ``app.py``, next to this folder). ``rag bench`` (:mod:`rag.cli`) only hands over to it.
- :mod:`benchmarks.scale`: the synthetic scale benchmark of every candidate vector index and the
  lexical index (``python -m benchmarks.scale 10000 100000 --json``; ``rag bench --scale`` calls it).

Both use rag through its public modules (``from rag.x import ...``); BENCHMARKS.md has the figures.
"""
