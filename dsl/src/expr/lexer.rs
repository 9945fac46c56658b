//! The tokenizer: turns expression text into tokens with byte spans.
