"""The repo's top-level `datasets/` package shadows Hugging Face's `datasets` library when a script
runs from the repo root. transformers and sentence-transformers must still import and work there."""
import subprocess
import sys
import textwrap

from tests.conftest import ROOT

SCRIPT = textwrap.dedent('''
    import json, os, sys, tempfile
    import datasets
    assert os.path.dirname(datasets.__file__) == os.path.join(os.getcwd(), 'datasets'), datasets.__file__
    import torch
    from transformers import BertConfig, BertModel, SiglipConfig, SiglipModel
    from sentence_transformers import SentenceTransformer
    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer
    folder = tempfile.mkdtemp()
    vocab = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + list('abcdefghijklmnopqrstuvwxyz')
    open(os.path.join(folder, 'vocab.txt'), 'w').write('\\n'.join(vocab) + '\\n')
    open(os.path.join(folder, 'tokenizer_config.json'), 'w').write(json.dumps({'tokenizer_class': 'BertTokenizer'}))
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=20, max_position_embeddings=64)).save_pretrained(folder)
    encoder = SentenceTransformer(modules=[Transformer(folder), Pooling(16)], device='cpu')
    vectors = encoder.encode(['title: a brush', 'brand: x'], normalize_embeddings=True)
    assert vectors.shape == (2, 16)
    config = SiglipConfig(text_config={'hidden_size': 16, 'intermediate_size': 20, 'num_hidden_layers': 1,
                                       'num_attention_heads': 2},
                          vision_config={'hidden_size': 16, 'intermediate_size': 20, 'num_hidden_layers': 1,
                                         'num_attention_heads': 2, 'image_size': 32, 'patch_size': 16})
    model = SiglipModel(config).eval()
    out = model.get_image_features(pixel_values=torch.randn(2, 3, 32, 32))
    pooled = out if torch.is_tensor(out) else out.pooler_output
    assert pooled.shape == (2, 16)
    print('ok')
''')


def test_hugging_face_libraries_work_from_the_repo_root(tmp_path):
    env_script = [sys.executable, '-c', SCRIPT]
    out = subprocess.run(env_script, cwd=ROOT, capture_output=True, text=True, timeout=240,
                         env={'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'PATH': '/usr/bin:/bin',
                              'HOME': str(tmp_path), 'PYTHONPATH': str(ROOT)})
    assert out.returncode == 0 and out.stdout.strip().endswith('ok'), out.stderr[-3000:]
