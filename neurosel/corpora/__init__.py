"""Real-speech corpora for recipes, prepared with Lhotse's own ``download_*``/``prepare_*``
functions: ``librispeech`` (in-domain LibriSpeech, OOD conditions made with ``conditions`` from
MUSAN noise and room impulse responses)."""
