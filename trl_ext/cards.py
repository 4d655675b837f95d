"""Model cards that name the method a trl_ext trainer ran, cite its paper and name trl_ext.

TRL's ``create_model_card`` (what ``push_to_hub`` and every checkpoint save call) renders TRL's template with the
trainer's ``_name`` and ``_paper``; every trainer here subclasses ``GRPOTrainer``, so without this the card says
"trained with GRPO, a method introduced in DeepSeekMath", and for a model loaded from a local folder it writes "a
fine-tuned version of [None](https://huggingface.co/None)". :class:`ModelCardMixin` keeps the card's metadata from
TRL's card (tags, base model, datasets, tracker tags) and re-renders the text with the template below.
"""

from __future__ import annotations

import os
import textwrap
from importlib.metadata import version
from pathlib import Path

from huggingface_hub import ModelCard
from transformers import is_wandb_available
from trl import RLOOTrainer as _TRLRLOOTrainer
from trl.trainer.utils import get_comet_experiment_url, get_config_model_id, get_trackio_space_url

DAPO_PAPER = {
    "title": "DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
    "id": "2503.14476",
    "citation": textwrap.dedent("""\
        @article{yu2025dapo,
            title        = {{DAPO: An Open-Source LLM Reinforcement Learning System at Scale}},
            author       = {Qiying Yu and Zheng Zhang and Ruofei Zhu and others},
            year         = 2025,
            eprint       = {arXiv:2503.14476},
        }"""),
}
RLOO_PAPER = _TRLRLOOTrainer._paper  # TRL's own entry for arXiv 2402.14740 (Ahmadian et al. 2024)
PPO_PAPER = {
    "title": "Proximal Policy Optimization Algorithms",
    "id": "1707.06347",
    "citation": textwrap.dedent("""\
        @article{schulman2017proximal,
            title        = {{Proximal Policy Optimization Algorithms}},
            author       = {John Schulman and Filip Wolski and Prafulla Dhariwal and Alec Radford and Oleg Klimov},
            year         = 2017,
            eprint       = {arXiv:1707.06347},
        }"""),
}
INSTRUCTGPT_PAPER = {
    "title": "Training language models to follow instructions with human feedback",
    "id": "2203.02155",
    "citation": textwrap.dedent("""\
        @inproceedings{ouyang2022training,
            title        = {{Training language models to follow instructions with human feedback}},
            author       = {Long Ouyang and Jeff Wu and Xu Jiang and Diogo Almeida and Carroll L. Wainwright and others},
            year         = 2022,
            booktitle    = {Advances in Neural Information Processing Systems},
            eprint       = {arXiv:2203.02155},
        }"""),
}

TEMPLATE = """---
{{ card_data }}
---

# Model Card for {{ model_name }}

{% if base_model %}This model is a fine-tuned version of [{{ base_model }}](https://huggingface.co/{{ base_model }})\
{% else %}This model was fine-tuned from a local checkpoint{% if local_base %} (`{{ local_base }}`){% endif %}{% endif %}\
{% if dataset_name %} on the [{{ dataset_name }}](https://huggingface.co/datasets/{{ dataset_name }}) dataset{% endif %}.
It was trained with {{ trainer_name }} from trl_ext {{ trl_ext_version }}, a plugin library for \
[TRL](https://github.com/huggingface/trl).

## Quick start

```python
from transformers import pipeline

generator = pipeline("text-generation", model="{{ hub_model_id or model_name }}")
print(generator("Once upon a time", max_new_tokens=32, return_full_text=False)[0]["generated_text"])
```

## Training procedure

{% if wandb_url %}Weights & Biases run: {{ wandb_url }}
{% endif %}{% if trackio_url %}Trackio: {{ trackio_url }}
{% endif %}{% if comet_url %}Comet: {{ comet_url }}
{% endif %}
This model was trained with {{ trainer_name }}, a method introduced in \
[{{ papers[0].title }}](https://huggingface.co/papers/{{ papers[0].id }})\
{% for paper in papers[1:] %}, in the form of [{{ paper.title }}](https://huggingface.co/papers/{{ paper.id }})\
{% endfor %}.

### Framework versions

- trl_ext: {{ trl_ext_version }}
- TRL: {{ trl_version }}
- Transformers: {{ transformers_version }}
- Pytorch: {{ pytorch_version }}
- Datasets: {{ datasets_version }}
- Tokenizers: {{ tokenizers_version }}

## Citations

Cite {{ trainer_name }} as:

```bibtex
{% for paper in papers %}{{ paper.citation }}
{% endfor %}```

Cite TRL as:

```bibtex
{% raw %}@software{vonwerra2020trl,
  title   = {{TRL: Transformers Reinforcement Learning}},
  author  = {von Werra, Leandro and Belkada, Younes and Tunstall, Lewis and Beeching, Edward and Thrush, Tristan and Lambert, Nathan and Huang, Shengyi and Rasul, Kashif and Gallou{\\'e}dec, Quentin},
  license = {Apache-2.0},
  url     = {https://github.com/huggingface/trl},
  year    = {2020}
}{% endraw %}
```
"""


class ModelCardMixin:
    """Overrides ``create_model_card`` (TRL's ``_BaseTrainer``): TRL writes its card, whose metadata is kept, then
    the text is re-rendered from :data:`TEMPLATE` with the method ``_name``, its paper ``_paper`` (plus
    ``_extra_papers``, e.g. InstructGPT for PPO) and trl_ext's version. Put it before the TRL trainer in the bases."""

    _extra_papers: tuple[dict, ...] = ()

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, tags=None):
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if not self.is_world_process_zero():
            return
        from . import __version__  # here, not at import time: trl_ext/__init__ imports the trainers

        path = os.path.join(self.args.output_dir, "README.md")
        data = ModelCard.load(path).data  # TRL's metadata: base_model (None for a local folder), tags, datasets
        source = get_config_model_id(self.model.config)
        wandb_url = None
        if is_wandb_available():
            import wandb

            wandb_url = wandb.run.url if wandb.run is not None else None
        card = ModelCard.from_template(
            data,
            template_str=TEMPLATE,
            model_name=model_name,
            base_model=data.base_model,
            local_base=Path(source).name if source and not data.base_model else None,
            dataset_name=dataset_name,
            hub_model_id=self.hub_model_id,
            trainer_name=self._name,
            papers=[self._paper, *self._extra_papers],
            wandb_url=wandb_url,
            trackio_url=get_trackio_space_url(),
            comet_url=get_comet_experiment_url(),
            trl_ext_version=__version__,
            **{f"{lib}_version": version(lib) for lib in ("trl", "transformers", "datasets", "tokenizers")},
            pytorch_version=version("torch"),
        )
        card.save(path)
