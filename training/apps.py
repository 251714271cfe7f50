from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"

    def ready(self) -> None:
        from labeling import seams
        from training import signals  # noqa: F401  (connects the receivers)
        from training.services.config_schema import training_config_check
        from training.services.model_specs import model_spec_check

        # labeling never imports training: it checks these two settings through its seam.
        seams.register_project_validators(
            model_spec=lambda project, spec: model_spec_check(project=project, spec=spec),
            training_config=training_config_check,
        )
