"""The model card (``README.md`` of an exported model folder): ``huggingface_hub``'s ``ModelCard``, its YAML
metadata (with the test figures as the hub's ``model-index``) from ``ModelCardData``, its text from the
``templates/model_card.md`` Jinja template: what the model is for, how it decides, how it was trained and
validated, and what it must not be used for."""
from __future__ import annotations

from importlib.resources import files

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from sigverify.evaluation.likelihood_ratio import SCALE, LRCalibration
from sigverify.serving.model_dir import ModelConfig

TEMPLATE = files("sigverify.serving") / "templates" / "model_card.md"
TAGS = ["signature-verification", "metric-learning", "onnx", "sigverify"]
# What the served vector is (ModelConfig.features), in the card's words.
SCORED = {"embedding": "the projection head's embedding",
          "backbone": "the backbone's pooled features (the projection head only trained them)",
          "both": "the embedding and the backbone's pooled features, their cosine similarities averaged",
          "backbone_and_untrained": "the trained backbone's pooled features and those of its starting weights before "
                                    "any training, their cosine similarities averaged (both networks are in the graph)"}
NEAR_FLOOR = 0.05  # an EER within this of the image-statistics floor is flagged: the model may rest on a shortcut


def model_card(config: ModelConfig, test_report: dict | None = None,
               likelihood_ratio: LRCalibration | None = None) -> ModelCard:
    report = test_report or {}
    tested_lr = report.get("likelihood_ratio") or {}
    model = config.training_config.get("model", {})
    floor, eer = report.get("image_statistics_eer"), report.get("eer")
    card_data = ModelCardData(library_name="sigverify", license="apache-2.0", pipeline_tag="image-feature-extraction",
                              tags=TAGS, model_name=f"sigverify {config.backbone} {model.get('loss', '')}".strip(),
                              eval_results=_eval_results(config, report) or None)
    return ModelCard.from_template(
        card_data, template_str=TEMPLATE.read_text(encoding="utf-8"),
        config=config, model=model, pre=config.preprocess, protocol=config.protocol, threshold=config.threshold,
        split=config.split, data=config.training_config.get("data", {}), weights=_weights(config.starting_weights, model),
        scored=SCORED[config.features],
        report=test_report, tested_lr=tested_lr if tested_lr.get("cllr") is not None else None,
        near_floor=floor is not None and eer is not None and eer > floor - NEAR_FLOOR,
        lr=likelihood_ratio, scale=SCALE, **_lr_range(likelihood_ratio),
        percent=_percent, interval=_interval, nan=float("nan"))


def _eval_results(config: ModelConfig, report: dict) -> list[EvalResult]:
    """The test figures as the hub's model-index entries (one per metric)."""
    data = config.training_config.get("data", {})
    name = str(data.get("root") or "sigverify built-in synthetic set")
    figures = [("eer", "EER", report.get("eer")), ("hter", "HTER at the validation threshold", report.get("hter")),
               ("roc_auc", "AUC", report.get("auc")), ("cllr", "Cllr (bits)", (report.get("likelihood_ratio") or {}).get("cllr"))]
    return [EvalResult(task_type="image-feature-extraction", task_name="writer-independent signature verification",
                       dataset_type="signatures", dataset_name=name, dataset_split=f"test signers, {config.protocol.name} protocol",
                       metric_type=metric, metric_name=label, metric_value=round(float(value), 4))
            for metric, label, value in figures if value is not None]


def _lr_range(lr: LRCalibration | None) -> dict:
    if lr is None:
        return {"lr_comparisons": None, "lr_range": None}
    genuine, skilled = lr.comparisons
    return {"lr_comparisons": f"{genuine} genuine and {skilled} skilled-forgery comparisons", "lr_range": lr.range_text()}


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _interval(values, percent: bool = True) -> str:
    if not values or any(v is None for v in values):
        return "n/a"
    return " - ".join(_percent(v) if percent else f"{v:.3f}" for v in values)


def _weights(described: dict | None, model: dict) -> str:
    if described is None:  # exported before the starting weights were recorded
        return "pretrained (not recorded)" if model.get("pretrained") or model.get("weights_file") else "scratch"
    extra = [f"{key.replace('_', ' ')}: {described[key]}" for key in ("trained_on", "licence") if key in described]
    return described["source"] + (f" ({'; '.join(extra)})" if extra else "")
