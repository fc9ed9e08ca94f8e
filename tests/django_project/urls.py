from django.urls import path

from . import views

urlpatterns = [
    path("login", views.login),
    path("items/<int:item_id>", views.item),
    path("order", views.order),
    path("unread", views.unread),
    path("stream", views.stream),
    path("astream", views.astream),
]
