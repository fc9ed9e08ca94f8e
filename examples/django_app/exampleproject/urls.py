"""URLs of the Django example: the same routes as the Flask and FastAPI examples."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("login", views.login),
    path("signup", views.signup),
    path("password/reset", views.password_reset),
    path("orders", views.place_order),
    path("orders/<int:order_id>", views.view_order),
    path("healthz", views.healthz),
]
