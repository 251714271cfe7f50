from django.urls import path

from training import views

urlpatterns = [
    path("projects/<slug:slug>/rounds/", views.rounds_dashboard, name="project-rounds"),
    path("projects/<slug:slug>/playground/", views.playground, name="project-playground"),
]
