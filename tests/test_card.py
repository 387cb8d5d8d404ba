"""The model card's metadata, as the Hub reads it: `inference: false` (no widget for an autoencoder), no local paths
anywhere (a local dataset is named by its folder, the usage names the repository being pushed), and a model-index of
measured quality only (no counts, no spreads, no loss a model does not train)."""

from pathlib import Path

import yaml
from huggingface_hub import ModelCard

import hf_autoencoders.models as M
from hf_autoencoders.hub import push_to_hub, write_model_card

METRICS = {
    "eval_psnr": 21.5, "eval_ssim": 0.8, "eval_loss": 12.0, "eval_reconstruction_loss": 11.0,
    "eval_codebook_loss": 0.0, "eval_commitment_loss": 0.4, "eval_codebook_perplexity": 9.5,
    "eval_num_examples": 64, "eval_quality_num_real": 64, "eval_quality_num_samples": 64,
    "eval_sample_fd_domain": 30.5, "eval_sample_kid_domain": 0.02, "eval_sample_kid_std_domain": 0.001,
    "eval_quality_features": "domain: SmallCNN (width 32, 5 epochs, seed 0) ... weights sha256 0123456789abcdef",
}


def metadata(folder: Path) -> dict:
    return yaml.safe_load((folder / "README.md").read_text().split("---")[1])


def test_the_card_of_a_model_trained_on_a_local_folder(tmp_path):
    dataset = tmp_path / "home" / "alice" / "data" / "my-digits"
    dataset.mkdir(parents=True)
    out = tmp_path / "run"
    out.mkdir()
    write_model_card(out, M.VQVAEConfig(codebook_ema=True), str(dataset),
                     {**METRICS, "eval_quality_features": f"domain: ... training images of my-digits, ..."})
    meta = metadata(out)
    assert meta["inference"] is False
    assert str(tmp_path) not in (out / "README.md").read_text()
    results = meta["model-index"][0]["results"]
    assert {result["dataset"]["name"] for result in results} == {"my-digits"}
    assert {result["dataset"]["type"] for result in results} == {"my-digits"}
    measured = {metric["type"] for result in results for metric in result["metrics"]}
    assert measured == {"psnr", "ssim", "loss", "reconstruction_loss", "commitment_loss", "codebook_perplexity",
                        "sample_fd_domain", "sample_kid_domain"}
    text = ModelCard.load(out / "README.md").text
    assert "| quality_num_real | 64 |" in text and "| codebook_loss | 0 |" in text  # the table keeps every figure


def test_a_hub_dataset_is_named_by_its_id(tmp_path):
    write_model_card(tmp_path, M.VAEConfig(), "ylecun/mnist", {"eval_psnr": 20.0})
    meta = metadata(tmp_path)
    assert meta["datasets"] == ["ylecun/mnist"] and meta["inference"] is False
    assert meta["model-index"][0]["results"][0]["dataset"] == {"name": "ylecun/mnist", "type": "ylecun/mnist",
                                                               "split": "test"}


def test_push_names_the_repository_in_the_usage(tmp_path):
    """A card written by a run without --hub_model_id, pushed later with `hf-autoencoders push`: what goes up says
    how to load the repository it went to, and is named after it."""
    out = tmp_path / "run"
    M.VAEModel(M.VAEConfig(backbone="mlp", hidden_size=8, latent_dim=2)).save_pretrained(out)
    write_model_card(out, M.VAEConfig(), "ylecun/mnist", {"eval_psnr": 20.0})
    assert "path/to/this/folder" in (out / "README.md").read_text()
    uploaded = {}

    class LocalHub:
        def create_repo(self, repo_id, **kwargs):
            pass

        def upload_folder(self, repo_id, folder_path, allow_patterns=None, **kwargs):
            uploaded.update({name: (Path(folder_path) / name).read_text() for name in allow_patterns
                             if name.endswith(".md")})
            return f"local://{repo_id}"

    push_to_hub(out, "alice/vae-mnist", api=LocalHub())
    card = uploaded["README.md"]
    assert "path/to/this/folder" not in card and 'from_pretrained("alice/vae-mnist"' in card
    assert yaml.safe_load(card.split("---")[1])["model-index"][0]["name"] == "alice/vae-mnist"
