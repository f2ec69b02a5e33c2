"""What a task declares and sees: resources, secrets, its typed interface, its reuse policy, and the
execution context it reads at run time. Value objects and checks; nothing here starts a container."""
