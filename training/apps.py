from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"

    def ready(self) -> None:
        from labeling import seams
        from training import signals, tasks  # noqa: F401  (receivers; tasks dispatch names)
        from training.services.config_schema import training_config_check
        from training.services.model_specs import model_spec_check

        # labeling never imports training: it checks these two settings through its seam.
        seams.register_project_validators(
            model_spec=lambda project, spec: model_spec_check(project=project, spec=spec),
            training_config=training_config_check,
        )
