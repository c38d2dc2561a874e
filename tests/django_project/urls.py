from django.urls import path

from tests.django_project.shop import views

urlpatterns = [
    path("orders/<str:order_id>/", views.place_order),
    path("results/<str:result_id>/", views.task_result),
]
