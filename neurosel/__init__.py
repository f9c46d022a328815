"""neurosel: hyper/hypo neuron analysis, pruning and selective unsupervised adaptation of CNN
acoustic models, as Kaldi-style recipes."""

__version__ = "0.1.0"
