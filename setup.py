"""Installs vivit_cofinetune with the pinned dependencies of requirements.txt."""
import pathlib

import setuptools

_HERE = pathlib.Path(__file__).parent


def _requirements() -> list[str]:
  lines = (_HERE / 'requirements.txt').read_text().splitlines()
  return [line.strip() for line in lines if line.strip() and not line.startswith('#')]


setuptools.setup(
    name='vivit_cofinetune',
    version='0.1.0',
    description='Co-finetuning ViViT video transformers on several video datasets at once (JAX/Flax).',
    long_description=(_HERE / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.11',
    # configs/ too: the config files import configs.common, wherever the command runs.
    packages=setuptools.find_packages(include=['vivit_cofinetune', 'vivit_cofinetune.*', 'configs']),
    install_requires=_requirements(),
    # pytest-xdist runs the suite on up to four processes (pytest.ini).
    extras_require={'test': ['pytest==9.2.0', 'pytest-xdist==3.8.0']},
)
