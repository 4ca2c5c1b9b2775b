import open_clip

from mmalign.shapes.tokenizer import write_clip_tokenizer


def test_offline_clip_tokenizer_matches_open_clip(tmp_path):
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp_path, 32))
    reference = open_clip.get_tokenizer("ViT-B-32")
    for text in ["a red circle left of a blue square", "Three YELLOW triangles!", "ünïcödé ✨ and 4k, a horse"]:
        ours = tokenizer(text, padding="max_length", max_length=32, truncation=True).input_ids
        theirs = [t if t else tokenizer.eos_token_id for t in reference([text], context_length=32)[0].tolist()]
        assert ours == theirs
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (49406, 49407, 49407)
    assert len(tokenizer) == 49408
