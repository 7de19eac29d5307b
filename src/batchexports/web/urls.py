"""Routes of the web page. Included at the root, after the API, health, admin and capture routes."""

from django.contrib.auth import views as auth_views
from django.urls import path, re_path

from batchexports.web import views

app_name = "web"

urlpatterns = [
    path("", views.home, name="home"),
    path(
        "login/",
        views.with_csp(auth_views.LoginView.as_view(template_name="web/login.html", redirect_authenticated_user=True)),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("switch/", views.switch_project, name="switch"),
    path("projects/<int:project_id>/", views.export_list, name="export_list"),
    path("projects/<int:project_id>/exports/new/", views.export_create, name="export_create"),
    path("projects/<int:project_id>/exports/<str:export_id>/", views.export_detail, name="export_detail"),
    path("projects/<int:project_id>/exports/<str:export_id>/edit/", views.export_edit, name="export_edit"),
    path(
        "projects/<int:project_id>/exports/<str:export_id>/runs/<str:run_id>/",
        views.run_detail,
        name="run_detail",
    ),
    # The page's own CSS and JavaScript (and the admin's), also when DEBUG is off and no
    # separate web server is in front: `batchexports up` is the whole deployment.
    re_path(r"^static/(?P<path>.+)$", views.static_file, name="static"),
]
