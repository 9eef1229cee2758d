"""Tiny Hugging Face tokenizers for tests, trained here: nothing is downloaded."""

from __future__ import annotations

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A model answers questions, and critics score the answers.",
    "Paris is the capital of France; Rome is the capital of Italy.",
    "Numbers: one two three four five six seven eight nine ten.",
    "def square(x): return x * x",
] * 4


def build_tokenizer(special: list[str], *, chat_template: str | None = None,
                    pair_markers: bool = False):
    """A byte-level BPE tokenizer (vocabulary 300) as a `PreTrainedTokenizerFast`.

    Args:
        special: special tokens; ``<unk>``, ``<pad>`` and ``<eos>`` must be among them.
        chat_template: a Jinja chat template to set.
        pair_markers: wrap inputs as ``<cls> A <sep> [B <sep>]`` (a text-pair classifier);
            ``<cls>`` and ``<sep>`` must be in `special`.
    """
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=300, special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    markers = {}
    if pair_markers:
        cls, sep = raw.token_to_id("<cls>"), raw.token_to_id("<sep>")
        raw.post_processor = processors.TemplateProcessing(
            single="<cls> $A <sep>", pair="<cls> $A <sep> $B:1 <sep>:1",
            special_tokens=[("<cls>", cls), ("<sep>", sep)])
        markers = {"cls_token": "<cls>", "sep_token": "<sep>"}
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>",
        **markers)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer
