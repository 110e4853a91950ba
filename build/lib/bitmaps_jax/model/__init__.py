"""The model: BERT in Flax, its binary weights, Hugging Face conversion, the packed file."""
