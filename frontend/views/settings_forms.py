"""The forms of the settings page (frontend/views/settings.py).

They only parse what the browser sends (text to numbers, lines to lists); every rule on the
values is the service's (`project_update`, `training_config_check`, `check_moderation_rules`,
the membership services), so the page refuses exactly what the API refuses.
"""

from typing import Any

from django import forms

from labeling.models import Membership, Project
from training.services.config_schema import SchemaField, schema_fields

RULES_FIELD = "ppo.rules"  # the one training_config key that is not a dataclass field
_BOOL_CHOICES = [("", "default"), ("true", "true"), ("false", "false")]


def lines(text: str) -> list[str]:
    """One item per non-blank line, stripped."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


class SectionForm(forms.Form):
    """A section that saves through project_update: `values()` are its keyword arguments."""

    def values(self) -> dict[str, Any]:
        return dict(self.cleaned_data)


class GeneralForm(SectionForm):
    guidelines = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 12, "spellcheck": "true"})
    )
    k = forms.IntegerField(label="K (responses per prompt)")
    overlap = forms.IntegerField(help_text="Rankings wanted per task, each by another labeler.")
    flag_vocabulary = forms.CharField(
        label="Flags",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="One per line.",
    )

    def values(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data["flag_vocabulary"] = lines(data["flag_vocabulary"])
        return data


class GenerationForm(SectionForm):
    max_new_tokens = forms.IntegerField(help_text="Tokens per sampled response, at most.")
    temperature = forms.FloatField()
    top_p = forms.FloatField(label="top_p")


class GateForm(SectionForm):
    gate_min_rm_accuracy = forms.FloatField(
        label="Minimum RM held-out accuracy",
        help_text=Project._meta.get_field("gate_min_rm_accuracy").help_text,
    )
    gate_max_rm_drop = forms.FloatField(
        label="Largest drop below the current RM",
        help_text=Project._meta.get_field("gate_max_rm_drop").help_text,
    )
    gate_kl_factor = forms.FloatField(
        label="KL bound (times the KL target)",
        help_text=Project._meta.get_field("gate_kl_factor").help_text,
    )


class ModerationForm(SectionForm):
    words = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Whole words or phrases, one per line.",
    )
    regexes = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Patterns, one per line (case-insensitive).",
    )
    classifier = forms.CharField(
        required=False,
        help_text="A sequence-classification folder under the model roots, or blank.",
    )
    labels = forms.CharField(
        required=False, help_text="Classifier labels that flag, comma-separated."
    )
    threshold = forms.FloatField(
        required=False, help_text="Probability of a label that flags (0, 1]."
    )

    @classmethod
    def initial_from(cls, rules: dict[str, Any]) -> dict[str, Any]:
        return {
            "words": "\n".join(rules.get("words", [])),
            "regexes": "\n".join(rules.get("regexes", [])),
            "classifier": rules.get("classifier", ""),
            "labels": ", ".join(rules.get("labels", [])),
            "threshold": rules.get("threshold", 0.5),
        }

    def values(self) -> dict[str, Any]:
        data = self.cleaned_data
        config: dict[str, Any] = {"words": lines(data["words"]), "regexes": lines(data["regexes"])}
        if data["classifier"].strip():
            config["classifier"] = data["classifier"].strip()
            config["labels"] = [
                label.strip() for label in data["labels"].split(",") if label.strip()
            ]
            if data["threshold"] is not None:
                config["threshold"] = data["threshold"]
        return {"moderation_rules": config}


class MemberAddForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.LABELER)
    password = forms.CharField(
        required=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        strip=False,
        help_text="Only for a new user (an existing user keeps theirs).",
    )


class MemberRoleForm(forms.Form):
    username = forms.CharField(max_length=150, widget=forms.HiddenInput)
    role = forms.ChoiceField(choices=Membership.Role.choices)


class MemberRemoveForm(forms.Form):
    username = forms.CharField(max_length=150, widget=forms.HiddenInput)


class TrainingForm(forms.Form):
    """One field per schema key (fields named by their path under training_config, e.g.
    "ppo.lr"); a blank field leaves the key out, so the run uses the default shown."""

    def __init__(self, *args: Any, config: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.schema = {_name(f): f for f in schema_fields()}
        for name, spec in self.schema.items():
            self.fields[name] = _form_field(spec)
            stored = _stored(config, spec.section, spec.name)
            if stored is not None:
                self.initial[name] = _initial(stored)
        rules = (config.get("ppo") or {}).get("rules") or []
        self.fields[RULES_FIELD] = forms.CharField(
            required=False,
            label="rules",
            widget=forms.Textarea(attrs={"rows": 3}),
            help_text="Rule-based reward terms added to the RM score, one per line.",
        )
        self.initial[RULES_FIELD] = "\n".join(str(rule) for rule in rules)

    def sections(self) -> list[tuple[str, bool, list[forms.BoundField]]]:
        """The bound fields grouped by section ("" first) with whether one has an error,
        for the template (a section with an error opens)."""
        groups: dict[str, list[forms.BoundField]] = {}
        for name in self.fields:
            section = name.split(".")[0] if "." in name else ""
            groups.setdefault(section, []).append(self[name])
        return [
            (section, any(field.errors for field in fields), fields)
            for section, fields in groups.items()
        ]

    def values(self) -> dict[str, Any]:
        """The training_config the cleaned form describes (blank fields left out)."""
        config: dict[str, Any] = {}
        for name, spec in self.schema.items():
            value = self.cleaned_data.get(name)
            if value is None or value == "":
                continue
            target = config.setdefault(spec.section, {}) if spec.section else config
            target[spec.name] = value
        rules = lines(self.cleaned_data.get(RULES_FIELD, ""))
        if rules:
            config.setdefault("ppo", {})["rules"] = rules
        return config

    def field_for_path(self, path: str) -> str | None:
        """The form field of an error's path ("training_config.ppo.lr" -> "ppo.lr")."""
        name = path.removeprefix("training_config.")
        return name if name in self.fields else None


def _name(spec: SchemaField) -> str:
    return f"{spec.section}.{spec.name}" if spec.section else spec.name


def _stored(config: dict[str, Any], section: str, name: str) -> Any:
    holder = config.get(section) if section else config
    return holder.get(name) if isinstance(holder, dict) else None


def _initial(value: Any) -> Any:
    return ("true" if value else "false") if isinstance(value, bool) else value


def _allowed(bounds: dict[str, Any]) -> str:
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return ", ".join(f"{sign} {bounds[key]}" for key, sign in signs.items() if key in bounds)


def _form_field(spec: SchemaField) -> forms.Field:
    allowed = _allowed(spec.bounds)
    help_text = f"{spec.help} Default: {spec.default}." + (
        f" Allowed: {allowed}." if allowed else ""
    )
    common: dict[str, Any] = {"required": False, "label": spec.name, "help_text": help_text}
    kinds = set(spec.kinds) - {type(None)}
    if "choices" in spec.bounds:
        choices = [("", f"default ({spec.default})")] + [(c, c) for c in spec.bounds["choices"]]
        return forms.ChoiceField(choices=choices, **common)
    if kinds == {bool}:
        return forms.TypedChoiceField(
            choices=_BOOL_CHOICES, coerce=lambda v: v == "true", empty_value=None, **common
        )
    attrs = {"placeholder": spec.default, "inputmode": "decimal"}
    if kinds == {int}:
        return forms.IntegerField(
            widget=forms.NumberInput(attrs=attrs | {"inputmode": "numeric"}), **common
        )
    if kinds == {float}:
        return forms.FloatField(widget=forms.TextInput(attrs=attrs), **common)
    return forms.CharField(widget=forms.TextInput(attrs={"placeholder": spec.default}), **common)
