"""The embedded synthetic speech corpus of ``egs/synth``.

Text from a grammar shipped in ``local/synth_text`` (``text``), spoken by pseudo-speakers made
from espeak-ng, flite and festival voices (``voices``, ``tts``), placed in acoustic conditions
(``conditions``), planned per split (``plan``), rendered (``render``) and written as Kaldi data
dirs with a manifest (``corpus``). Entry point: ``corpus.make_corpus(config, corpus_dir, nj)``,
with the config from ``config.CorpusConfig`` (``egs/synth/conf/corpus.yaml``).
"""
