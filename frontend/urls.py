from django.urls import path

from frontend import views

urlpatterns = [
    path("", views.home, name="home"),
    path("projects/", views.project_list, name="project-list"),
    path("projects/<slug:slug>/label/", views.label, name="project-label"),
    path("projects/<slug:slug>/demonstrate/", views.demonstrate, name="project-demonstrate"),
]
