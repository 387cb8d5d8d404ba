"""The linear-pca experiment (`hf-autoencoders experiment linear-pca`): a linear autoencoder trained on squared
error against PCA with as many components (guide section 1.1: "If we restrict f and g to learning linear mappings
... this optimization problem can be solved analytically using principal component analysis")."""

from __future__ import annotations

import torch

from .report import Report, fmt, markdown_table
from .runner import Runner
from .verdicts import Claim, within_margin

TITLE = "Experiment: a linear autoencoder is PCA"
QUESTION = (
    "Does a linear autoencoder f(x) = Wx + b, g(z) = Vz + c trained on the squared error reach the reconstruction "
    "error of PCA with as many components, and does its decoder span the principal subspace?"
)
MEASURES_QUALITY = False  # no Frechet distances: nothing here reads them
REPLICATED = True
MARGIN = 0.02  # the relative gap in test MSE within which the two count as equal


def pca(train: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and the top-`k` principal directions (D, k) of the flattened training images (float64)."""
    x = train.flatten(1).double()
    mean = x.mean(0)
    covariance = (x - mean).T @ (x - mean) / len(x)
    _, vectors = torch.linalg.eigh(covariance)  # ascending eigenvalues
    return mean, vectors[:, -k:].flip(1)


def subspace_overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared cosine of the principal angles between the column spaces of a and b (D, k): 1 for the same
    subspace, k / D on average for random ones."""
    qa, qb = torch.linalg.qr(a.double())[0], torch.linalg.qr(b.double())[0]
    return (torch.linalg.matrix_norm(qa.T @ qb) ** 2 / min(a.shape[1], b.shape[1])).item()


def decoder_matrix(model) -> torch.Tensor:
    """V of the linear decoder g(z) = Vz + c, (D, k): the decoder's Jacobian, which for a linear map is V."""
    z = torch.zeros(1, model.config.latent_dim, device=model.device)
    jacobian = torch.autograd.functional.jacobian(lambda v: model.decode(v).sample.flatten(1), z)
    return jacobian.reshape(-1, model.config.latent_dim).cpu()


def run(runner: Runner, report: Report) -> None:
    k = runner.budget.latent_dim
    linear = runner.train(f"linear AE d={k}", "ae", {"backbone": "mlp", "num_hidden_layers": 0, "linear": True})
    train, _ = runner.train_images(len(runner.train_set))
    mean, components = pca(train, k)
    x = runner.test_x.flatten(1).double()
    projected = ((x - mean) @ components) @ components.T + mean
    pca_recon = projected.clamp(0, 1).float().view_as(runner.test_x)
    pca_mse = (pca_recon - runner.test_x).pow(2).flatten(1).mean(1)
    pca_psnr = (10 * torch.log10(1 / pca_mse.clamp_min(1e-10))).mean().item()
    pca_mse = pca_mse.mean().item()
    overlaps = []
    for run in linear.runs:
        with torch.enable_grad():
            run.metrics["subspace_overlap"] = subspace_overlap(decoder_matrix(run.model), components.float())
        run.metrics["mse_over_pca"] = run.metrics["mse"] / pca_mse
        overlaps.append(run.metrics["subspace_overlap"])
    random_overlap = k / x.shape[1]
    report.summary = {"pca": {"components": k, "mse": pca_mse, "psnr": pca_psnr}, "random_overlap": random_overlap}
    rows = [["PCA", str(k), fmt(pca_mse), fmt(pca_psnr), "1", "1"],
            [linear.label, str(k), fmt(linear.mean("mse")), fmt(linear.mean("psnr")),
             f"{linear.mean('mse_over_pca'):.4f} ± {linear.std('mse_over_pca'):.4f}",
             f"{linear.mean('subspace_overlap'):.4f} ± {linear.std('subspace_overlap'):.4f}"]]
    report.section(
        "Linear autoencoder against PCA",
        f"PCA: the top {k} principal directions of the {len(train)} training images (centred), reconstructions "
        "x -> mean + U U^T (x - mean). Linear AE: one linear layer each way, trained on the summed squared error "
        "with the budget's optimiser and length. Test MSE per pixel (reconstructions clamped to [0, 1] for both); "
        "subspace overlap: mean squared cosine of the principal angles between the decoder's columns and the "
        f"principal directions (1: the same subspace; about {random_overlap:.3f} for a random one).",
        markdown_table(["model", "components", "test MSE", "PSNR (dB)", "MSE / PCA's", "subspace overlap"], rows),
        [("Test images, PCA reconstructions, linear-AE reconstructions (first seed)", report.image_rows_figure(
            [runner.test_x[:8], pca_recon[:8], linear.first.reconstructions[:8]], "pca_vs_linear_ae.png")),
         ("Training loss of the linear AE", report.loss_figure([linear]))],
    )
    verdict, gap, se = within_margin(linear.values("mse"), pca_mse, MARGIN * pca_mse)
    report.claim(Claim(
        "linear_ae_is_pca",
        "a linear autoencoder trained on squared error finds PCA's solution (its reconstruction error and subspace)",
        verdict,
        f"test MSE {linear.mean('mse'):.5f} ± {linear.std('mse'):.5f} against PCA's {pca_mse:.5f} (gap "
        f"{100 * gap / pca_mse:+.2f}% ± {200 * se / pca_mse:.2f}%); subspace overlap "
        f"{sum(overlaps) / len(overlaps):.4f} (random: {random_overlap:.3f})",
        rule=f"equal if the linear AE's MSE ± 2 SE lies within ±{100 * MARGIN:g}% of PCA's; contradicted if wholly "
             "outside; otherwise within noise",
    ))
